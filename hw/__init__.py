"""Hardware adapters (GPIO, the USB handset's audio, the hook), each with a simulated twin.

Importing ``hw`` never imports RPi.GPIO or pyaudio: each backend imports its library when it is
chosen, so the same firmware runs on a PC, in the tests and on the Pi.
"""
