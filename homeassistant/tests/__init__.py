"""Tests that run real Home Assistant code (see homeassistant/README.md)."""
