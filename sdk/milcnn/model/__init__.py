"""What a released model is: its config.json, checksums, the zoo registry and the Hub."""
