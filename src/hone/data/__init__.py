"""Data: reading, checking and preparing training sets into versioned splits."""
