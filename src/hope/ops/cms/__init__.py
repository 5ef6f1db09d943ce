"""The CMS's training path over many segments (segments.py), tested against `hope.layers.cms`'s walk."""
