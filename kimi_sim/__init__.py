"""A local simulator of Kimi's two web protocols (REST /api and Connect /apiv2), for tests and demos."""
