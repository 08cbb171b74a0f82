"""The stage device: runs one stage, exits early or forwards features to the next stage."""
