"""Channels: the record store and the live-tail wake-ups that let readers follow it."""
