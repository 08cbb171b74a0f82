"""What Home Assistant shows of a pipeline, its edge devices and its cameras.

Each builder returns one `DeviceDiscovery` whose entities read the topics of docs/protocol.md:
the pipeline's from `orchestrator/state` and the retained `control/policy`, a device's from
`status/<device>` and `telemetry/<device>`, a camera's from its `camera/<id>/...` subtree.
Availability follows the status topic of whoever publishes the entity's state.
"""

from __future__ import annotations

from collections.abc import Sequence

from distree_mqtt.homeassistant.discovery import (
    Availability,
    BinarySensor,
    Component,
    Device,
    DeviceDiscovery,
    Event,
    Image,
    Number,
    Origin,
    Select,
    Sensor,
    discovery_id,
)
from distree_mqtt.topics import Topics

ORCHESTRATOR_ID = "orchestrator"  # the status level the orchestrator publishes on
POLICY_MODES = ("adaptive", "static", "no-exit")
CAMERA_EVENT_TYPES = ("new", "update", "end")
# Values the services publish on status/<id>: anything retained there means "known".
_KNOWN_STATUS = "{{ 'online' if value in ['online', 'offline', 'stopped'] else 'offline' }}"
_LAST = "{% set r = value_json.last_result %}"


def pipeline_node_id(topics: Topics, node_id: str | None = None) -> str:
    """The pipeline's node id; devices and cameras hang below it."""
    return node_id or discovery_id(topics.prefix, topics.pipeline)


def pipeline_discovery(
    topics: Topics,
    num_stages: int,
    node_id: str | None = None,
    name: str | None = None,
    model_id: str | None = None,
    origin: Origin | None = None,
) -> DeviceDiscovery:
    """The pipeline as one device: results, latency, load, exits, and its two controls."""
    node = pipeline_node_id(topics, node_id)
    state = topics.orchestrator_state

    def sensor(object_id: str, entity_name: str, template: str, **options: object) -> Sensor:
        return Sensor(
            object_id=object_id,
            name=entity_name,
            unique_id=f"{node}_{object_id}",
            state_topic=state,
            value_template=template,
            **options,  # type: ignore[arg-type]
        )

    components: list[Component] = [
        sensor(
            "last_result",
            "Last result",
            _LAST + "{{ r.class_name if r and r.class_name is not none else None }}",
            icon="mdi:label-outline",
            json_attributes_topic=state,
            json_attributes_template="{{ (value_json.last_result or {}) | tojson }}",
        ),
        sensor(
            "confidence",
            "Confidence",
            _LAST + "{{ (r.confidence * 100) | round(1) if r and r.confidence is not none else None }}",
            unit_of_measurement="%",
            state_class="measurement",
            suggested_display_precision=1,
            icon="mdi:gauge",
        ),
        sensor(
            "exit_stage",
            "Exit stage",
            _LAST + "{{ r.exit_stage if r and r.exit_stage is not none else None }}",
            icon="mdi:exit-run",
        ),
        sensor(
            "latency_p95",
            "Latency p95",
            "{{ value_json.observed_p95_ms }}",
            unit_of_measurement="ms",
            device_class="duration",
            state_class="measurement",
            suggested_display_precision=0,
        ),
        sensor(
            "within_target",
            "Within latency target",
            "{{ (value_json.share_within_target * 100) | round(1) "
            "if value_json.results_in_window >= 10 else None }}",
            unit_of_measurement="%",
            state_class="measurement",
            suggested_display_precision=1,
            icon="mdi:timer-check-outline",
        ),
        sensor(
            "requests_per_second",
            "Requests per second",
            "{{ value_json.requests_per_second }}",
            unit_of_measurement="req/s",
            state_class="measurement",
            suggested_display_precision=1,
            icon="mdi:speedometer",
        ),
    ]
    for stage in range(num_stages):
        components.append(
            sensor(
                f"exit_rate_stage_{stage}",
                f"Exit rate stage {stage}",
                "{% set rates = value_json.exit_rates %}"
                f"{{{{ (rates[{stage}] * 100) | round(1) if rates and rates | length > {stage} else None }}}}",
                unit_of_measurement="%",
                state_class="measurement",
                suggested_display_precision=1,
                icon="mdi:call-split",
            )
        )
    components += [
        Number(
            object_id="latency_target",
            name="Latency target",
            unique_id=f"{node}_latency_target",
            command_topic=topics.control_set("latency_target_ms"),
            state_topic=topics.policy,
            value_template="{{ value_json.latency_target_ms }}",
            min=1,
            max=3_600_000,
            step=1,
            mode="box",
            unit_of_measurement="ms",
            icon="mdi:timer-cog-outline",
            entity_category="config",
        ),
        Select(
            object_id="policy_mode",
            name="Policy mode",
            unique_id=f"{node}_policy_mode",
            command_topic=topics.control_set("mode"),
            options_list=POLICY_MODES,
            state_topic=topics.policy,
            value_template="{{ value_json.mode }}",
            icon="mdi:tune-variant",
            entity_category="config",
        ),
    ]
    return DeviceDiscovery(
        node_id=node,
        device=Device(
            identifiers=(node,),
            name=name or f"distree {topics.pipeline}",
            model=f"pipeline of {num_stages} stages" + (f" ({model_id})" if model_id else ""),
        ),
        components=tuple(components),
        availability=(Availability(topics.status(ORCHESTRATOR_ID)),),
        origin=origin or Origin(),
    )


def device_node_id(topics: Topics, device_id: str, node_id: str | None = None) -> str:
    return discovery_id(pipeline_node_id(topics, node_id), device_id)


def edge_device_discovery(
    topics: Topics,
    device_id: str,
    stage_index: int,
    num_stages: int | None = None,
    node_id: str | None = None,
    model_id: str | None = None,
    origin: Origin | None = None,
) -> DeviceDiscovery:
    """One edge device: connectivity, queue delay and compute time from its telemetry."""
    pipeline_node = pipeline_node_id(topics, node_id)
    node = device_node_id(topics, device_id, node_id)
    telemetry = topics.telemetry(device_id)
    status = topics.status(device_id)

    def timing(object_id: str, entity_name: str, field_name: str) -> Sensor:
        return Sensor(
            object_id=object_id,
            name=entity_name,
            unique_id=f"{node}_{object_id}",
            state_topic=telemetry,
            value_template=f"{{{{ value_json.{field_name} }}}}",
            unit_of_measurement="ms",
            device_class="duration",
            state_class="measurement",
            suggested_display_precision=1,
        )

    stages = f" of {num_stages}" if num_stages else ""
    return DeviceDiscovery(
        node_id=node,
        device=Device(
            identifiers=(node,),
            name=f"distree {topics.pipeline} {device_id}",
            model=f"stage {stage_index}{stages}" + (f" ({model_id})" if model_id else ""),
            via_device=pipeline_node,
        ),
        components=(
            BinarySensor(
                object_id="connectivity",
                name="Connectivity",
                unique_id=f"{node}_connectivity",
                state_topic=status,
                value_template="{{ 'ON' if value == 'online' else 'OFF' }}",
                device_class="connectivity",
                entity_category="diagnostic",
                # Known as soon as any status is retained, online or not.
                availability=(Availability(status, value_template=_KNOWN_STATUS),),
            ),
            timing("queue_delay", "Queue delay p95", "queue_delay_p95_ms"),
            timing("compute_time", "Compute time p50", "compute_p50_ms"),
        ),
        availability=(Availability(status),),
        origin=origin or Origin(),
    )


def camera_node_id(topics: Topics, camera_id: str, node_id: str | None = None) -> str:
    return discovery_id(pipeline_node_id(topics, node_id), "camera", camera_id)


def camera_discovery(
    topics: Topics,
    camera_id: str,
    class_names: Sequence[str],
    off_delay_s: int | None = 30,
    node_id: str | None = None,
    name: str | None = None,
    origin: Origin | None = None,
) -> DeviceDiscovery:
    """A camera service: detection events, the last snapshot, one binary sensor per class."""
    pipeline_node = pipeline_node_id(topics, node_id)
    node = camera_node_id(topics, camera_id, node_id)
    event_template = (
        "{{ {'event_type': value_json.type, 'id': value_json.get('id'), "
        "'class_name': value_json.get('class_name'), 'label': value_json.get('label'), "
        "'confidence': value_json.get('confidence'), 'start_time': value_json.get('start_time'), "
        "'end_time': value_json.get('end_time')} | tojson }}"
    )
    components: list[Component] = [
        Event(
            object_id="detection",
            name="Detection",
            unique_id=f"{node}_detection",
            state_topic=topics.camera_events(camera_id),
            event_types=CAMERA_EVENT_TYPES,
            value_template=event_template,
            icon="mdi:cctv",
        ),
        Image(
            object_id="snapshot",
            name="Snapshot",
            unique_id=f"{node}_snapshot",
            image_topic=topics.camera_snapshot(camera_id),
            content_type="image/jpeg",
        ),
        Sensor(
            object_id="last_detection",
            name="Last detection",
            unique_id=f"{node}_last_detection",
            state_topic=topics.camera_state(camera_id),
            value_template="{{ value_json.class_name if value_json.class_name is not none else None }}",
            json_attributes_topic=topics.camera_state(camera_id),
            icon="mdi:label-outline",
        ),
    ]
    used: set[str] = {component.object_id for component in components}
    for class_name in class_names:
        object_id = discovery_id("detected", class_name)
        if object_id in used:  # class names that differ only in unsafe characters
            object_id = discovery_id(object_id, str(len(used)))
        used.add(object_id)
        components.append(
            BinarySensor(
                object_id=object_id,
                name=f"{class_name} detected",
                unique_id=f"{node}_{object_id}",
                state_topic=topics.camera_detected(camera_id, class_name),
                off_delay=off_delay_s or None,
                icon="mdi:eye-outline",
            )
        )
    return DeviceDiscovery(
        node_id=node,
        device=Device(
            identifiers=(node,),
            name=name or f"distree {topics.pipeline} camera {camera_id}",
            model="camera service",
            via_device=pipeline_node,
        ),
        components=tuple(components),
        availability=(Availability(topics.status(camera_id)),),
        origin=origin or Origin(),
    )
