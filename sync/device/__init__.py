"""The device side: :class:`~edgekm.sync.device.agent.DeviceAgent`, its durable outbox and the
one signed HTTP client (standard library, numpy and msgpack only)."""
