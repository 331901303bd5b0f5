"""ls.engine"""
