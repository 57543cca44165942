"""The report: figures, LaTeX macros and tables from results, the sections on sampling levers, continued
training and model width, the small shared checkpoint, and the README's package map.

It turns results into documents and never computes results itself.
"""
