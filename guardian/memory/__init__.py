"""Incident memory: investigations kept with their outcome, similar past incidents, and the
confirmed causes as a prior on a new investigation's ranking."""
