"""Pure correlation and enrichment: no I/O, no clock reads, no logging."""
