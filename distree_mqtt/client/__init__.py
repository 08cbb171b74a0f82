"""Submit images to a pipeline and get exactly one outcome per request."""

from distree_mqtt.client.pipeline import Pipeline, RequestRejected, RequestTimeout

__all__ = ["Pipeline", "RequestRejected", "RequestTimeout"]
