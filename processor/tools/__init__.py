"""Small tools beside the service: the usage report, the demo and a test sink."""
