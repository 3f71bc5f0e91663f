"""The version of the feature code, part of every feature cache key."""

# Bump when anything that changes feature values changes (transforms, frame selection, model code).
FEATURES_CODE_VERSION = "1"

# The tiny preset's T5 vocabulary (thinksound/features/tiny_t5_vocab.json): tiny text features change
# with it, so it is part of their identity.
TINY_T5_TOKENIZER = "t5-unigram-v1"
