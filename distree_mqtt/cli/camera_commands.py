"""`distree camera`: one camera's motion-triggered requests, state, events and snapshots."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from distree_mqtt.settings import load_settings


def _roi(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--roi takes x,y,width,height in pixels, got {text!r}") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--roi takes four numbers x,y,width,height, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def register(commands: Any) -> None:
    camera = commands.add_parser(
        "camera",
        help="run the pipeline on a camera when something moves",
        description="Read a stream, USB/V4L2 camera, video file or image folder; send frames with motion "
        "(and optional keyframes) to stage 0; publish retained state, new/update/end events, per-class "
        "ON/OFF and an annotated JPEG snapshot. One process per camera. Stops on SIGINT/SIGTERM or "
        "when a file or folder ends.",
    )
    camera.add_argument(
        "--config", type=Path, help="settings file (its `camera:` section; DISTREE_CAMERA__* also apply)"
    )
    camera.add_argument("--broker", help="broker URL, mqtt://[user:pass@]host:port or mqtts://...")
    camera.add_argument("--pipeline", help="pipeline name (topic level after the prefix)")
    camera.add_argument("--protocol", choices=["5", "3.1.1"], help="MQTT protocol version")
    camera.add_argument(
        "--source", help="rtsp://... | http://... | USB index | /dev/videoN | video file | folder"
    )
    camera.add_argument("--camera-id", help="topic level of this camera (default: camera)")
    camera.add_argument("--fps", type=float, help="frames per second through the motion gate")
    camera.add_argument(
        "--loop", action="store_true", default=None, help="replay a file or folder at its end"
    )
    camera.add_argument("--motion", dest="motion_method", choices=["diff", "mog2", "none"])
    camera.add_argument(
        "--min-area", dest="min_area_fraction", type=float, help="changed fraction for motion"
    )
    camera.add_argument("--roi", type=_roi, help="x,y,width,height in pixels")
    camera.add_argument("--cooldown-s", type=float, help="ignore motion this long after a trigger")
    camera.add_argument("--keyframe-interval-s", type=float, help="also run every N s without motion")
    camera.add_argument("--classes", type=_names, help="comma-separated class names to track")
    camera.add_argument("--min-confidence", type=float, help="confidence a detection needs")
    camera.add_argument("--max-in-flight", type=int, help="unanswered requests before frames are dropped")
    camera.add_argument("--deadline-ms", type=float, help="per-request deadline")
    camera.add_argument("--bundle", type=Path, help="bundle the pipeline runs (default: the MNIST reference)")
    camera.add_argument("--invert", action="store_true", default=None, help="dark objects on a light scene")
    camera.set_defaults(handler=run_camera)


def run_camera(args: argparse.Namespace) -> int:
    from distree_mqtt.camera.service import CameraService
    from distree_mqtt.systemd import run_notified

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = {
        name: getattr(args, name)
        for name in (
            "source",
            "camera_id",
            "fps",
            "loop",
            "motion_method",
            "min_area_fraction",
            "roi",
            "cooldown_s",
            "keyframe_interval_s",
            "classes",
            "min_confidence",
            "max_in_flight",
            "deadline_ms",
            "bundle",
            "invert",
        )
    }
    settings = load_settings(
        args.config,
        command="camera",
        broker={"url": args.broker, "protocol": args.protocol},
        pipeline=args.pipeline,
        camera=options,
    )
    service = CameraService(settings)
    service.start()  # a bad source or ROI fails here, in one line
    print(f"camera {service.camera_id}: watching {service.source.description}", file=sys.stderr, flush=True)
    run_notified(service, finished=service.wait)  # READY, STATUS, watchdog; STOPPING and stop on exit
    return 0
