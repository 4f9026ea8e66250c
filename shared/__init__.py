"""The runtime every Lockstep service uses: bus, database, telemetry, settings, lifecycle."""
