"""Managing the pubsub cache: the `herald cache` commands and what the ad-hoc
commands share with them (statistics, listings, resync requests, purges, resets)."""
