"""ls.viz"""
