"""Pure renderers: plain values in, file contents out. No `import pulumi` here."""
