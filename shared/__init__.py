"""Common code of every service: settings, schema, Redis keys, logging, errors."""
