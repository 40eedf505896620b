"""The artifact format both the doorbell and the owner read: age sealing, keys, signed
manifests, the wire contract and the broker connection. Neither side owns it."""
