"""Network builders."""
