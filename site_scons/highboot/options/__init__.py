"""What the user asks for: every option described once (schema), the project file that supplies
them (project), the typed build config derived from both (config), and the framebuffer mode's syntax."""
