"""The service kit: what every Backroom service needs once (settings, db, outbox, inbox, app, auth)."""
