#!/bin/sh
# Runs the example's one test and prints a JUnit report.
out=$(./dist/hello)
if [ "$out" = "Hello from buildagent" ]; then failures=0; else failures=1; fi
cat <<XML
<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="hello" tests="1" failures="$failures">
  <testcase classname="hello" name="prints the greeting"/>
</testsuite>
XML
