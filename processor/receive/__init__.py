"""Receivers: where OTLP spans enter the service."""
