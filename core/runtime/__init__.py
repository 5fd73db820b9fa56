"""Process plumbing every layer may use: settings, logs, the event loop, background tasks,
fault points, and the fan-out over shards."""
