"""Config loading and device/cloud adapters."""
