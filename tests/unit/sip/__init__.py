"""Unit tests of the SIP layer."""
