"""The sender daemon: leases outbound rows and submits them over SMPP (`smsgw sender`)."""
