"""The reference device agent (docs/devices.md): what device firmware does before, while and
after it installs an update, with files standing in for its trust store, secure counters and A/B
slots. The decisions are `flashgate.trust.device`'s."""
