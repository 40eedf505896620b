"""uplink/: sealing, the durable outbox and the MQTT link."""
