"""Earshot: call-barge appliance firmware (FreeSWITCH-style eavesdrop on a Raspberry Pi)."""
