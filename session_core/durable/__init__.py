"""The Durable Streams protocol on the channel store."""
