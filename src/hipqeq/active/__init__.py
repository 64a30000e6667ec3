"""Active learning: committee-driven exploration rounds (DP-GEN style).

Round 0 is the xTB-driven pipeline. Each round r >= 1 trains a committee on every
label so far, explores with it (:mod:`~hipqeq.active.explore`: ML-MD walkers), measures
the committee's disagreement on every explored frame (:mod:`~hipqeq.active.deviation`),
sorts frames into accurate / candidate / failed by a trust window
(:mod:`~hipqeq.active.trust`), picks a diverse subset of the candidates for labelling
(:mod:`~hipqeq.active.candidates`) and decides whether another round is needed
(:mod:`~hipqeq.active.stop`).
"""
