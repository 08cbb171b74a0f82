"""Multi-exit networks: backbones cut into stages, exit heads, training and calibration."""

from distree_mqtt.model.multi_exit import ExitOutput, MultiExitNetwork, Stage
from distree_mqtt.model.spec import ModelSpec, build_network, build_stage

__all__ = ["ExitOutput", "ModelSpec", "MultiExitNetwork", "Stage", "build_network", "build_stage"]
