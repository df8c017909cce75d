try:
    from hapruned.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python starts: no traceback, the status of an interrupt
    raise SystemExit(130) from None

raise SystemExit(main())
