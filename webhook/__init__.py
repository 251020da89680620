"""GuardGrid's mutating admission webhook: warm recovery stages for training pods (docs/webhook.md)."""
