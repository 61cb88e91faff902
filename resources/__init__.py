"""Connections and services the assets and sensors use: warehouse, files, alerts."""
