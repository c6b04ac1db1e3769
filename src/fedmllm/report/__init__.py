"""Run outputs: metrics files, console tables and plots."""
