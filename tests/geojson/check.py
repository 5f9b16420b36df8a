#!/usr/bin/env python3
"""Validate GeoJSON documents against RFC 7946 with an independent validator (the `geojson`
package), plus the two rules it cannot see: longitude first and within range.

Usage: check.py FILE...   Exit 0 and print "valid N" when every file is valid."""
import json
import sys

import geojson


def positions(geometry):
    kind = geometry["type"]
    coords = geometry["coordinates"]
    if kind == "Point":
        return [coords]
    if kind in ("LineString", "MultiPoint"):
        return coords
    raise ValueError(f"unexpected geometry type {kind}")


def check(path):
    with open(path) as f:
        text = f.read()
    obj = geojson.loads(text)
    if not obj.is_valid:
        raise ValueError(f"{path}: {obj.errors()}")
    doc = json.loads(text)
    if doc.get("type") != "FeatureCollection":
        raise ValueError(f"{path}: not a FeatureCollection")
    for feature in doc["features"]:
        if not isinstance(feature, geojson.Feature) and feature.get("type") != "Feature":
            raise ValueError(f"{path}: member is not a Feature")
        for pos in positions(feature["geometry"]):
            lon, lat = pos[0], pos[1]
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise ValueError(f"{path}: position {pos} is not [lon, lat] in range")
    return len(doc["features"])


def main():
    total = 0
    for path in sys.argv[1:]:
        total += check(path)
    print(f"valid {total}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KeyError, TypeError) as e:
        print(f"invalid: {e}", file=sys.stderr)
        sys.exit(1)
