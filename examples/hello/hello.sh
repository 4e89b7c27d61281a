#!/bin/sh
cat "$GREETING_FILE"
echo "running on $(cat /app/arch)"
