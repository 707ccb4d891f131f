"""Images and documents a request carries: the SSRF-safe URL fetcher, content sniffing and the intake that
turns an adapter's `AttachmentInput`s into stored bytes and canonical `AttachmentPart`s."""
