"""Physical constants and unit conversions, in one place.

hipqeq works in eV, Angstrom and elementary charges (e) everywhere; engines that use
other units (Hartree, Bohr) are converted once, at their boundary, with these factors.

Sources: CODATA 2018 via ``scipy.constants`` values, rounded as below.
"""

#: Coulomb constant k_e = e^2 / (4 pi eps0) in eV * Angstrom / e^2 (CODATA 2018).
COULOMB_EV_A = 14.399645478

#: 1 Hartree in eV (CODATA 2018).
HARTREE_EV = 27.211386245988

#: 1 Bohr in Angstrom (CODATA 2018).
BOHR_A = 0.529177210903

#: Boltzmann constant in eV / K (CODATA 2018, exact).
BOLTZMANN_EV_K = 8.617333262e-5

#: Units of every labelled quantity in a hipqeq dataset; written into Parquet metadata.
DATASET_UNITS = {
    "positions": "Angstrom",
    "cell": "Angstrom",
    "energy": "eV",
    "forces": "eV/Angstrom",
    "stress": "eV/Angstrom^3 (Voigt xx yy zz yz xz xy)",
    "charges": "e",
    "total_charge": "e",
    "temperature_K": "K",
    "wall_time_s": "s",
}
