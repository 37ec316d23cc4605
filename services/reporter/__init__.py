"""The reporter daemon: campaign, traffic, inbound and opt-out reports, made in the background."""
