"""Home Assistant: MQTT discovery of the pipeline, its edge devices and cameras.

`discovery` (payload models) and `entities` (what each service announces) import no MQTT client
and no torch, so Home Assistant's own test environment can load them; `publisher` sends them.
"""
