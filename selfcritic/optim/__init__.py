"""MuonClip's optimizer side: Muon for matrices (experts one at a time), AdamW for the rest."""
