"""The version of the feature code, part of every feature cache key."""

# Bump when anything that changes feature values changes (transforms, frame selection, model code).
FEATURES_CODE_VERSION = "1"
