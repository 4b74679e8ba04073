// Translation unit that owns the precompiled header shared by every torch-using target.
