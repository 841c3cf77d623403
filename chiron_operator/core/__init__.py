"""Frozen types shared by the controllers and their drivers. No I/O, no clock."""
