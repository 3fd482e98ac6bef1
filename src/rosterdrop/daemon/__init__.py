"""The daemon (`rosterdrop serve`): SFTP server, watcher, durable queue, workers."""
