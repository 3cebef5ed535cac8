"""The built-in synthetic multilingual speech benchmark: grammar, speech synthesis, manifests."""
