"""Bridges to other training frameworks (TRL: `selfcritic.integrations.trl`)."""
