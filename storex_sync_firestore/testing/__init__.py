"""Test helpers shipped with the package: the shared-log conformance suite and the Firestore emulator."""
