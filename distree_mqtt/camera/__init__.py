"""`distree camera`: a camera's frames through a motion gate into the pipeline, and its answers
out as retained state, detection events, per-class ON/OFF and annotated snapshots.

Modules follow the data flow: sources -> motion -> preprocess -> (pipeline) -> tracker ->
snapshot, wired by service; settings holds the `camera` section of DistreeSettings.
"""
