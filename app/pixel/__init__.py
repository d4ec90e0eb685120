"""The tracking pixel: /api/v1/pixel/track and /config, pixel.js, what becomes of each event
(intake), input validation, enrichment, and the pixel domains that map a site's host to its
workspace (with their verification)."""
